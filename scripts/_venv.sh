# Sourced by scripts/*: creates .venv on first use and reinstalls when pyproject.toml changes.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-python3}"
stamp="$venv/.installed-$(sha1sum "$root/pyproject.toml" | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "setting up $venv (first run or pyproject.toml changed)..." >&2
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >&2 2>/dev/null || true
  "$venv/bin/python" -m pip install -q -e "$root[test]" 2>&1 | grep -v "is ignored: it is neither" >&2 || true
  "$venv/bin/python" -c "import modelux_local, litestar, aiohttp, apsw, openai" || { echo "install failed" >&2; exit 1; }
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
