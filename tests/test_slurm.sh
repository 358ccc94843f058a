#!/usr/bin/env bash
# The cluster test (#30): a private one-node Slurm cluster (munged, slurmctld, slurmd on this
# machine, own ports, own state folder, a fake GPU gres) runs examples/slurm/generate.sbatch as a
# 3-task job array with the demo model. Checks: the tasks' PNGs are byte-identical to one process's,
# the manifest lists each image once with shards 0/3, 1/3, 2/3; scancel of a running task leaves no
# partial file and exits with SIGTERM's status; resubmitting the array renders only what is missing.
#
#   test_slurm.sh VKDIFFUSION_BINARY SOURCE_DIR
# Exit 77 (skipped) when Slurm or munge is not installed or we are not root, except under CI.
set -uo pipefail
bin=$1
src=$2
skip() {
  echo "test_slurm: $1"
  if [ -n "${CI:-}" ]; then echo "test_slurm: FAIL (CI is set: .ci/run installs slurmctld slurmd slurm-client munge)"; exit 1; fi
  exit 77
}
for tool in munged mungekey slurmctld slurmd sbatch squeue scancel sinfo; do
  command -v "$tool" > /dev/null || [ -x "/usr/sbin/$tool" ] || skip "$tool is not installed"
done
[ "$(id -u)" -eq 0 ] || skip "slurmd needs root"
export PATH="$PATH:/usr/sbin"

T=$(mktemp -d /tmp/vkd_test_slurm.XXXXXX)
fail=0
check() { # check DESCRIPTION COMMAND...
  if "${@:2}"; then echo "  ok: $1"; else echo "  FAIL: $1"; fail=1; fi
}
cleanup() {
  [ -f "$T/ctld.pid" ] && SLURM_CONF=$T/slurm.conf scancel --quiet -u root 2> /dev/null
  for p in "$T/d.pid" "$T/ctld.pid" "$T/munge/pid"; do [ -f "$p" ] && kill "$(cat "$p")" 2> /dev/null; done
  sleep 1
  for p in "$T/d.pid" "$T/ctld.pid" "$T/munge/pid"; do [ -f "$p" ] && kill -9 "$(cat "$p")" 2> /dev/null; done
  rm -rf "$T"
}
trap cleanup EXIT
die() { echo "test_slurm: FAIL: $1"; for f in "$T"/log/*.log; do echo "== $f"; tail -20 "$f"; done; exit 1; }

# munge with its own key and socket
mkdir -p "$T/munge" "$T/state" "$T/spool" "$T/log" "$T/out"
chmod 700 "$T/munge"
mungekey -c -k "$T/munge/munge.key" -b 1024 -f || die "mungekey"
chmod 600 "$T/munge/munge.key"
munged --socket="$T/munge/sock" --key-file="$T/munge/munge.key" --pid-file="$T/munge/pid" \
  --log-file="$T/log/munge.log" --seed-file="$T/munge/seed" --force || die "munged did not start"

# the cluster: this host, all its cores, one (fake) GPU
host=$(hostname -s)
port=$((20000 + $$ % 20000))
cat > "$T/slurm.conf" << EOF
ClusterName=vkdtest
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$T/munge/sock
CredType=cred/munge
SlurmctldPort=$port
SlurmdPort=$((port + 1))
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/ctld.pid
SlurmdPidFile=$T/d.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
KillWait=20
GresTypes=gpu
NodeName=$host CPUs=$(nproc) RealMemory=1000 Gres=gpu:3 State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
mkdir -p "$T/dev" && touch "$T/dev/gpu0" "$T/dev/gpu1" "$T/dev/gpu2" # 3 fake GPUs: 3 tasks at once
echo "NodeName=$host Name=gpu File=$T/dev/gpu[0-2]" > "$T/gres.conf"
export SLURM_CONF=$T/slurm.conf
slurmctld -i || die "slurmctld did not start"
slurmd || die "slurmd did not start"
for _ in $(seq 60); do sinfo -h -o %t 2> /dev/null | grep -q idle && break; sleep 0.5; done
sinfo -h -o %t | grep -q idle || die "the node did not come up: $(sinfo 2>&1)"
echo "  cluster up: $(sinfo -h -o '%P %D %t %G')"

# the prompt file: 7 images, most with random seeds (resolved from the run seed)
prompts=$T/prompts.json
cat > "$prompts" << 'EOF'
[{"prompt": "a red circle on a blue background", "steps": 3, "batch_count": 3},
 {"prompt": "a green square", "seed": 11, "steps": 3, "batch_count": 2},
 {"prompt": "a yellow star", "steps": 3},
 {"prompt": "a purple ring", "steps": 3, "sampler": "euler"}]
EOF
model=$src/models/demo/demo.safetensors
"$bin" generate --model "$model" --quiet -o "$T/one" "$prompts" || die "the one-process run failed"

# the example, as users submit it; the resources this one-node cluster has replace the example's
submit() { # submit ARRAY [extra sbatch args]
  sbatch --wait --array="$1" --cpus-per-task=1 --mem=100M --output="$T/log/task-%a.log" "${@:2}" \
    --export=ALL,MODEL="$model",PROMPTS="$prompts",OUT="$T/out",VKDIFFUSION="$bin" "$src/examples/slurm/generate.sbatch"
}
t0=$(date +%s.%N)
submit 0-2 > "$T/log/sbatch.log" 2>&1 || die "sbatch --wait failed: $(cat "$T/log/sbatch.log"; cat "$T"/log/task-*.log)"
t1=$(date +%s.%N)
echo "  3-task array finished in $(awk "BEGIN {printf \"%.1f\", $t1 - $t0}") s"
same=1
for f in "$T"/one/*.png; do cmp -s "$f" "$T/out/$(basename "$f")" || { echo "  differs: $(basename "$f")"; same=0; }; done
check "7 PNGs from the array, byte-identical to one process" \
  test "$same" = 1 -a "$(ls "$T"/out/*.png | wc -l)" = 7 -a "$(ls "$T"/one/*.png | wc -l)" = 7
check "the manifest: 7 lines, each image once" test "$(wc -l < "$T/out/manifest.jsonl")" = 7
for f in "$T"/one/*.png; do
  n=$(grep -c "\"output\":\"$T/out/$(basename "$f")\"" "$T/out/manifest.jsonl")
  [ "$n" = 1 ] || { echo "  $(basename "$f"): $n manifest lines"; fail=1; }
done
for s in 0/3 1/3 2/3; do check "the manifest has shard $s" grep -q "\"shard\":\"$s\"" "$T/out/manifest.jsonl"; done
check "each task printed its shard from SLURM_ARRAY_TASK_ID" grep -q "shard 1/3 (SLURM_ARRAY_TASK_ID=1)" "$T/log/task-1.log"

# scancel mid-image: SIGTERM, the image in progress is discarded, no partial file, exit 143
cat > "$T/long.json" << 'EOF'
{"prompt": "a long render", "seed": 5, "steps": 1000, "batch_count": 4}
EOF
jid=$(sbatch --parsable --array=0 --cpus-per-task=1 --mem=100M --output="$T/log/long-%a.log" \
  --export=ALL,MODEL="$model",PROMPTS="$T/long.json",OUT="$T/long",VKDIFFUSION="$bin" "$src/examples/slurm/generate.sbatch")
for _ in $(seq 120); do grep -q "shard 0/1" "$T/log/long-0.log" 2> /dev/null && break; sleep 0.5; done
sleep 3
scancel "$jid"
for _ in $(seq 120); do [ -z "$(squeue -h -j "$jid" 2> /dev/null)" ] && break; sleep 0.5; done
check "scancel: the task stopped" test -z "$(squeue -h -j "$jid" 2> /dev/null)"
check "scancel: vkdiffusion saw SIGTERM and stopped cleanly" grep -q "interrupted by signal 15" "$T/log/long-0.log"
check "scancel: no partial or temporary file" test -z "$(ls -A "$T/long" 2> /dev/null | grep -v manifest.jsonl)"

# requeue: one image deleted, one cut short; the same array again renders exactly those two
victims=$(ls "$T"/out/*.png | sed -n '2p;5p')
set -- $victims
rm "$1"
head -c 200 "$2" > "$2.cut" && mv "$2.cut" "$2"
submit 0-2 > "$T/log/sbatch2.log" 2>&1 || die "the resubmitted array failed: $(cat "$T"/log/task-*.log)"
same=1
for f in "$T"/one/*.png; do cmp -s "$f" "$T/out/$(basename "$f")" || same=0; done
check "resubmitted: every PNG byte-identical again" test "$same" = 1
check "resubmitted: exactly 2 images rendered (9 manifest lines)" test "$(wc -l < "$T/out/manifest.jsonl")" = 9
check "resubmitted: the deleted one rendered again" grep -q "\"output\":\"$1\"" <(tail -2 "$T/out/manifest.jsonl")
check "resubmitted: the truncated one rendered again" grep -q "\"output\":\"$2\"" <(tail -2 "$T/out/manifest.jsonl")

[ "$fail" = 0 ] && echo "test_slurm: all checks passed" || echo "test_slurm: FAILED"
exit "$fail"
