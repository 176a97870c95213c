"""
Sessions: the recorder service and its writers (JSONL, SQLite).
"""
