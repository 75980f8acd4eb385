# Sourced by scripts/*: creates .venv on first use and reinstalls when pyproject.toml changes.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-python3}"
stamp="$venv/.installed-$(sha1sum "$root/pyproject.toml" | cut -c1-12)"

# Runs pip with its log in $log and, every few seconds, prints what pip is doing (its last
# Collecting/Downloading/Building/Installing line), so a first set-up never looks hung.
_pip_with_phases() {
  local phase="$1"; shift
  local t0=$SECONDS last="" now line start
  start=$(($(wc -l <"$log") + 1))
  "$venv/bin/python" -m pip "$@" >>"$log" 2>&1 &
  local pid=$!
  echo "  $phase..." >&2
  while kill -0 "$pid" 2>/dev/null; do
    sleep 3
    line="$(tail -n +"$start" "$log" | grep -E '^(Collecting|Downloading|Building|Installing|Successfully)' | tail -1 | cut -c1-100)"
    now="$(tail -n +"$start" "$log" | grep -cE '^(Collecting|Processing)')"
    if [ -n "$line" ] && [ "$line" != "$last" ]; then
      echo "  [$((SECONDS - t0))s] $phase: $now packages so far; $line" >&2
      last="$line"
    fi
  done
  wait "$pid"
}

if [ ! -f "$stamp" ]; then
  echo "setting up $venv (first run or pyproject.toml changed; about a minute, progress below)..." >&2
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  log="$venv/install.log"
  : >"$log"
  _pip_with_phases "upgrading pip" install --progress-bar off --upgrade pip || true
  if ! _pip_with_phases "installing modelux-local and its dependencies" install --progress-bar off -e "$root[test]" \
      || ! "$venv/bin/python" -c "import modelux_local, litestar, aiohttp, apsw, openai, textual" 2>>"$log"; then
    grep -v "is ignored: it is neither" "$log" >&2
    echo "setting up $venv failed (full log: $log)" >&2
    exit 1
  fi
  echo "  done in ${SECONDS}s (log: $log)" >&2
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
