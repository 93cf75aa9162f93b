#!/usr/bin/env bash
# Installs the benchmark peers, stabilize 0.33.1 and DBOS 3.4.0, next to stabilize_aio.
#
# Their requirements and ours coexist: neither peer pins anyio, aiosqlite, asyncpg, msgspec or
# tenacity (stabilize needs bulkman, pydantic, python-ulid, resilient-circuit; DBOS needs sqlalchemy,
# psycopg, croniter, click, pyyaml, python-dateutil), and `pip check` is clean with all three in one
# environment. So no virtual environment is made: the peers go into the same interpreter as
# stabilize_aio, through the `bench` extra when pyproject.toml has it, or by their pinned names
# otherwise. Both runners are then started with that interpreter.
#
# Usage: benchmarks/peers/setup.sh            (uses python3 from PATH; PYTHON=/path/to/python to choose)
# Idempotent (pip leaves what is already installed alone); exits non-zero on any failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-python3}"
peers=("stabilize==0.33.1" "dbos==3.4.0")

if ! "$python" -c 'import stabilize_aio' 2>/dev/null; then
    echo "setup.sh: stabilize_aio is not importable by $python; installing the project first" >&2
    "$python" -m pip install --quiet -e "$root"
fi

if grep -Eq '^[[:space:]]*bench[[:space:]]*=' "$root/pyproject.toml"; then
    "$python" -m pip install --quiet -e "$root[bench]"
else
    "$python" -m pip install --quiet "${peers[@]}"
fi

"$python" -m pip check
"$python" - <<'EOF'
from importlib.metadata import version

expected = {"stabilize": "0.33.1", "dbos": "3.4.0"}
for name, want in expected.items():
    got = version(name)
    if got != want:
        raise SystemExit(f"setup.sh: {name} {got} is installed, the benchmarks need {want}")
import dbos  # noqa: F401  (both import cleanly next to stabilize_aio)
import stabilize  # noqa: F401
import stabilize_aio  # noqa: F401
EOF
echo "peers ready; start both runners with: $("$python" -c 'import sys; print(sys.executable)')"
