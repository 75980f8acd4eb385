# Sourced by scripts/*: creates .venv on first use and reinstalls when pyproject.toml changes.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-python3}"
stamp="$venv/.installed-$(sha1sum "$root/pyproject.toml" | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "setting up $venv (first run or pyproject.toml changed)..." >&2
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  log="$venv/install.log"
  "$venv/bin/python" -m pip install -q --upgrade pip >"$log" 2>&1 || true
  if ! "$venv/bin/python" -m pip install -q -e "$root[test]" >>"$log" 2>&1 \
      || ! "$venv/bin/python" -c "import modelux_local, litestar, aiohttp, apsw, openai, textual" 2>>"$log"; then
    grep -v "is ignored: it is neither" "$log" >&2
    echo "setting up $venv failed (full log: $log)" >&2
    exit 1
  fi
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
