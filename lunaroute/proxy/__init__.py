"""
The ingress: Klein routes, the streaming relay and the request log.
"""
