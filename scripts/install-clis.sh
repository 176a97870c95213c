#!/usr/bin/env bash
# Install the real Claude Code and Codex CLIs (pinned versions) into a local
# npm prefix, for end-to-end tests against LunaRoute.  Idempotent: does nothing
# when the pinned versions are already installed and runnable.
#
#   scripts/install-clis.sh            # prints the bin dir on stdout
#   PATH="$(scripts/install-clis.sh):$PATH" claude --version
#
# Cache dir: $LUNAROUTE_CLI_CACHE, default <repo>/.cache/npm (about 640 MB:
# both packages ship native binaries through platform optionalDependencies).
# Needs node >= 18 and npm.  See docs/clients.md.
set -euo pipefail

CLAUDE_CODE_VERSION="2.1.197"
CODEX_VERSION="0.169.0"

here="$(cd "$(dirname "$0")" && pwd)"
prefix="${LUNAROUTE_CLI_CACHE:-$here/../.cache/npm}"
mkdir -p "$prefix"
prefix="$(cd "$prefix" && pwd)"
bin="$prefix/node_modules/.bin"

log() { printf 'install-clis: %s\n' "$*" >&2; }

for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        log "$tool not found on PATH; install Node.js (>= 18) and npm first"
        exit 1
    fi
done

claude_ok() {
    [ -x "$bin/claude" ] || return 1
    local out
    out="$("$bin/claude" --version 2>/dev/null)" || return 1
    [ "${out%% *}" = "$CLAUDE_CODE_VERSION" ]
}

codex_ok() {
    [ -x "$bin/codex" ] || return 1
    local out
    out="$("$bin/codex" --version 2>/dev/null)" || return 1
    [ "$out" = "codex-cli $CODEX_VERSION" ]
}

if claude_ok && codex_ok; then
    printf '%s\n' "$bin"
    exit 0
fi

log "installing @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION and @openai/codex@$CODEX_VERSION into $prefix"
# --include=optional: the native binaries come as optional dependencies.
# --foreground-scripts is not needed; Claude Code's postinstall only copies
# its native binary over a placeholder (redone below if scripts were skipped).
npm_log="$(mktemp)"
trap 'rm -f "$npm_log"' EXIT
if ! npm install \
    --prefix "$prefix" \
    --save-exact \
    --include=optional \
    --no-audit \
    --no-fund \
    --no-update-notifier \
    --loglevel=error \
    "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" \
    "@openai/codex@$CODEX_VERSION" >"$npm_log" 2>&1; then
    cat "$npm_log" >&2
    log "npm install failed"
    exit 1
fi

if ! claude_ok; then
    # npm may have skipped the package's postinstall (ignore-scripts, or an
    # npm that does not run unapproved install scripts): run it ourselves.
    pkg="$prefix/node_modules/@anthropic-ai/claude-code"
    if [ -f "$pkg/install.cjs" ]; then
        log "running Claude Code's postinstall (native binary setup)"
        (cd "$pkg" && node install.cjs) >&2
    fi
fi

if ! claude_ok; then
    log "claude does not run after install: $("$bin/claude" --version 2>&1 | head -n 3 || true)"
    exit 1
fi
if ! codex_ok; then
    log "codex does not run after install: $("$bin/codex" --version 2>&1 | head -n 3 || true)"
    exit 1
fi

printf '%s\n' "$bin"
