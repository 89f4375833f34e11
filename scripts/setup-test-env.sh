#!/usr/bin/env bash
# Installs what the test suites need beyond Rust (idempotent, reuses caches):
#   - Debian packages listed in scripts/apt-packages.txt (one per line, # comments),
#     installed with apt-get only when one is missing;
#   - a Python virtual environment at .deps/venv with scripts/requirements-test.txt
#     (pinned; reinstalled only when that file changes).
# Tests find that Python as $IRTDB_TEST_PYTHON (set by scripts/test.sh), else .deps/venv/bin/python.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

# --- Debian packages ---
mapfile -t pkgs < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$root/scripts/apt-packages.txt")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- Python test environment ---
venv="$root/.deps/venv"
req="$root/scripts/requirements-test.txt"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
fi
echo "test python: $venv/bin/python"

# --- Browser test driver (tests/it/serve.rs): playwright-core from the lock file; it drives
# Debian's chromium, so no browser download happens.
web="$root/tests/web"
if [ ! -f "$web/node_modules/.package-lock.json" ] || ! cmp -s "$web/package-lock.json" "$web/node_modules/.irtdb-lock"; then
  (cd "$web" && npm ci --no-audit --no-fund --silent)
  cp "$web/package-lock.json" "$web/node_modules/.irtdb-lock"
fi
