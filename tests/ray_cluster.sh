#!/usr/bin/env bash
# Run a command beside a two-node Ray cluster (a head and a second node, one CPU each, each with
# its own temp dir in $1) at 127.0.0.1:6379. Run it only inside namespaces of its own:
#   unshare --net --pid --fork --mount-proc bash tests/ray_cluster.sh TMPDIR COMMAND...
# Ray's processes talk over the machine's network address whatever they are told, and would
# see (and be seen by) any other Ray on the machine: in a network namespace of its own only the
# loopback exists, and every Ray process ends with the PID namespace when COMMAND is done.
# HIDDEN_ON_SECOND_NODE=FOLDER: the second node runs where FOLDER is an empty mount.
set -euo pipefail
tmp=$1
shift
mkdir -p "$tmp"
[ "$$" = 1 ] || { echo "ray_cluster.sh: not in a PID namespace of its own (see its first lines)" >&2; exit 2; }
ip link set lo up
ray="$(dirname "$(command -v python)")/ray"
common=(--num-cpus=1 --node-ip-address=127.0.0.1 --disable-usage-stats)
"$ray" start --head --port=6379 --temp-dir="$tmp/head" --include-dashboard=false "${common[@]}" >"$tmp/head.log" 2>&1
second=("$ray" start --address=127.0.0.1:6379 --temp-dir="$tmp/two" "${common[@]}")
if [ -n "${HIDDEN_ON_SECOND_NODE:-}" ]; then  # a node where that folder is not mounted
    unshare --mount --propagation private bash -c 'mount -t tmpfs none "$0" && exec "$@"' \
        "$HIDDEN_ON_SECOND_NODE" "${second[@]}" >"$tmp/two.log" 2>&1
else
    "${second[@]}" >"$tmp/two.log" 2>&1
fi
python - <<'EOF'
import time, ray
ray.init(address="127.0.0.1:6379", logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + 60
while sum(n["Alive"] for n in ray.nodes()) < 2:
    assert time.monotonic() < deadline, "the second Ray node did not join in 60 s"
    time.sleep(0.2)
EOF
"$@"
