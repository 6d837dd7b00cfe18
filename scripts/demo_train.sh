#!/usr/bin/env bash
# The demo model's training on the device (docs/demo_model.md), one step per argument, in order:
#
#   bash scripts/demo_train.sh setup data "par train:vit_distill:4.5 train:ss_vae:4.5" ...
#
# Everything lives in $WORK, the device's disk, which stays while the machine is held (several calls
# of one session); a new session regenerates the data (deterministic) and restores the models.
# Steps (each resumes what is already done):
#   setup                  install the carried wheels (.whl/) into /tmp/site; build the rasterisers
#   restore                a model folder $STATE (default models/demo_state), or its packed parts
#                          ($STATE/demo.tar.partNN), into
#                          $WORK/prev: later trainings start from its weights (config 'init'); its
#                          ViT becomes $WORK/vit (once a VAE has learnt its features, never retrained;
#                          before that, train:vit_distill goes on from it)
#   data                   procedural meshes (train seeds from $DATA_SEED, default 0: another start each
#                          session shows the models new objects; held-out seeds fixed) + renders, $SHARDS prepare-data
#                          processes on disjoint meshes merged into $WORK/data; the held-out objects
#                          into $WORK/held_data
#   train:RUN:MIN[:RES[:new]]
#                          run RUN for at most MIN minutes, and at most until RES seconds (default 60)
#                          before the call's budget ($BUDGET seconds after the script started). A run
#                          that exists goes on with its own config; a new one takes
#                          configs/training/demo/RUN.json (or demo/variants/RUN.json), frozen paths
#                          filled in, starting from the restored folder's weights unless 'new'
#   pick:NAME:RUN,RUN...   the run whose last three logged losses are lowest -> runs/NAME (a link)
#   par A B ...            the steps A, B... at the same time (one GPU, small models)
#   export:NAME:STAGE,...  the runs of STAGE,... (or prev: the restored folder's) -> model folder $WORK/NAME
#   features               prepare-data's features phase with the distilled ViT ($WORK/vit/dinov2)
#   latents:NAME[:KINDS]   prepare-data's latents phase with the encoders of model folder $WORK/NAME
#                          (KINDS: ss_latent,slat or one of them; default every kind it has encoders for)
#   quality:NAME:N         scripts/demo_quality.py on N held-out objects -> $OUT/quality
#   pack:NAME              model folder $WORK/NAME + the runs' logs -> $OUT/demo.tar.partNN (15 MiB each)
set -euo pipefail
export PYTHONUNBUFFERED=1
# four runs share one GPU: without it the SLat flow ran out of memory on an H100 (fragmented reserves)
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
START=$SECONDS
WORK=${WORK:-/tmp/demo}
OUT=${OUT:-$WORK/out}
BUDGET=${BUDGET:-560}
COUNT=${COUNT:-1200}
HELD=${HELD:-60}
DATA_SEED=${DATA_SEED:-0}
SHARDS=${SHARDS:-4}
STATE=${STATE:-models/demo_state}  # a carried folder (a call takes 64 MiB: carry only what it restores)
PREP=(--resolution 32 --views 24 --cond-views 8 --render-size 256 --seed 0)
mkdir -p "$WORK/runs" "$WORK/configs" "$OUT"
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
say() { echo "[demo $(date +%H:%M:%S) +$((SECONDS - START))s] $*"; }
save_logs() {  # one file ($OUT takes at most 8), whatever happens (a time-out included)
  for f in "$WORK"/*.log "$WORK"/runs/*.log; do
    # the first lines (backends chosen) and the last ones (progress bars end up one line per update)
    [ -e "$f" ] && { echo "== $f"; tr '\r' '\n' < "$f" | grep -v '^$' | sed -n '1,6p'; echo ...;
                     tr '\r' '\n' < "$f" | grep -v '^$' | tail -n 12; }
  done > "$OUT/logs.txt"
  return 0
}
trap save_logs EXIT

step_setup() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
  # the rasterisers' CUDA builds (about 20 s and 60-80 s), once, while the data is made
  python3 -c "import torch; from trellis_impl.render.mesh_raster import _nvdiffrast_context as n; \
n(torch.device('cuda')); print('nvdiffrast ready', flush=True); \
from trellis_impl.render.gaussian_raster import _gsplat_available as g; print('gsplat', g(torch.device('cuda'), torch.float32))" \
    > "$WORK/warm.log" 2>&1 &
}

step_restore() {
  rm -rf "$WORK/restore"; mkdir -p "$WORK/restore"
  if [ -e "$STATE/pipeline.json" ]; then  # a model folder (the committed candidate travels with the tree)
    cp -r "$STATE" "$WORK/restore/demo"
  elif [ -e "$STATE/demo.tar.part00" ]; then
    cat "$STATE"/demo.tar.part* | tar -x -C "$WORK/restore"
  else
    say "nothing to restore"; return 0
  fi
  rm -rf "$WORK/prev"; mv "$WORK/restore/demo" "$WORK/prev"
  if [ -d "$WORK/prev/dinov2" ]; then  # the ViT is never trained again: features stay those the VAE learnt
    rm -rf "$WORK/vit"; mkdir -p "$WORK/vit"; cp -r "$WORK/prev/dinov2" "$WORK/vit/dinov2"
  fi
  say "restored: $(ls "$WORK/prev/ckpts" | tr '\n' ' ')"
}

prepare_in_shards() {  # prepare-data on $SHARDS disjoint parts of $WORK/meshes and on $WORK/held, at once,
                       # until all are done. $1: log name (shard k logs to $WORK/$1k.log); $2: the shards'
                       # --out, {k} standing for k; the rest: options besides PREP
  local log=$1 out=$2 files part pids=() k i
  shift 2
  mapfile -t files < <(ls "$WORK"/meshes/*.glb | sort)
  for k in $(seq 0 $((SHARDS - 1))); do
    part=(); for i in "${!files[@]}"; do (( i % SHARDS == k )) && part+=("${files[$i]}"); done
    # a share of the cores each: several processes of 16 threads thrash on 16 cores
    OMP_NUM_THREADS=$(( $(nproc) / SHARDS )) python3 -m trellis_impl prepare-data "${part[@]}" --out "${out//\{k\}/$k}" \
      "${PREP[@]}" "$@" > "$WORK/$log$k.log" 2>&1 &
    pids+=($!)
  done
  OMP_NUM_THREADS=2 python3 -m trellis_impl prepare-data "$WORK/held" --out "$WORK/held_data" "${PREP[@]}" "$@" \
    >> "$WORK/held.log" 2>&1 &
  pids+=($!)
  for k in "${pids[@]}"; do wait "$k"; done
}

step_data() {
  python3 -m trellis_impl procedural-meshes --out "$WORK/meshes" --count "$COUNT" --split train --seed "$DATA_SEED" >/dev/null
  python3 -m trellis_impl procedural-meshes --out "$WORK/held" --count "$HELD" --split held_out >/dev/null
  if [ ! -e "$WORK/data/dataset.json" ]; then
    # the shards use the rasteriser's extension that setup builds
    for _ in $(seq 120); do grep -q -E "nvdiffrast ready|Traceback" "$WORK/warm.log" 2>/dev/null && break; sleep 1; done
    say "rasteriser build: $(tail -n 3 "$WORK/warm.log" 2>/dev/null | tr '\n' ' ')"
    prepare_in_shards part "$WORK/part{k}"
    python3 -c "import sys; from trellis_impl.training.dataset import merge_training_data as m; \
d = m(sys.argv[2:], sys.argv[1]); print(len(d), 'assets,', len(d.manifest['failed']), 'failed')" \
      "$WORK/data" $(for k in $(seq 0 $((SHARDS - 1))); do echo "$WORK/part$k"; done)
  fi
  say "data: $(ls "$WORK/data/assets" | wc -l) training assets, $(ls "$WORK/held_data/assets" | wc -l) held out"
}

config() {  # the demo config of run $1 -> $WORK/configs/$1.json: the device's frozen paths, and
            # 'init' from the restored folder's checkpoints when it has this stage's (unless $2 = new)
  python3 - "$1" "$WORK" "${2:-}" <<'EOF'
import json, os, sys
run, work, fresh = sys.argv[1], sys.argv[2], sys.argv[3] == "new"
path = next(p for p in (f"configs/training/demo/{run}.json", f"configs/training/demo/variants/{run}.json")
            if os.path.isfile(p))
config = json.load(open(path))
if "image_encoder" in config.get("frozen", {}):
    config["frozen"]["image_encoder"] = f"{work}/vit/dinov2"
for role, name in config.get("export", {}).items():
    if not fresh and os.path.isfile(f"{work}/prev/ckpts/{name}.json"):
        config.setdefault("init", {})[role] = f"{work}/prev/ckpts/{name}"
if config["stage"] == "vit_distill" and not fresh and os.path.isdir(f"{work}/prev/dinov2"):
    config.setdefault("init", {})["student"] = f"{work}/prev/dinov2"  # the distillation goes on
if config["stage"] == "slat_flow" and "init" in config and config["data"].get("normalization", "auto") == "auto":
    # a flow that goes on keeps the latent normalisation it learnt with ('auto' would recompute it
    # over this session's new objects)
    restored = json.load(open(f"{work}/prev/pipeline.json"))["args"].get("slat_normalization")
    if restored:
        config["data"]["normalization"] = restored
json.dump(config, open(f"{work}/configs/{run}.json", "w"), indent=2)
print(run, "starts from", config.get("init", "new weights"))
EOF
}

step_train() {
  local run=$1 minutes=$2 reserve=${3:-60} config
  if [ -e "$WORK/runs/$run/config.json" ]; then  # goes on (the trainer refuses a changed config)
    config="$WORK/runs/$run/config.json"
  else
    config "$run" "${4:-}"
    config="$WORK/configs/$run.json"
  fi
  minutes=$(python3 -c "print(max(0.1, min($minutes, ($BUDGET - $reserve - ($SECONDS - $START)) / 60)))")
  say "train $run for at most $minutes min"
  # a failed run does not stop the call: the other runs' exports and the pack still come back
  python3 -m trellis_impl train "$config" --data "$WORK/data" --out "$WORK/runs/$run" \
    --minutes "$minutes" >> "$WORK/runs/$run.log" 2>&1 || { say "train $run FAILED:"; tail -n 30 "$WORK/runs/$run.log"; }
  tail -n 2 "$WORK/runs/$run.log"
}

step_pick() {
  local name=$1
  python3 - "$WORK/runs" "$name" ${2//,/ } <<'EOF'
import json, os, sys
runs, name, candidates = sys.argv[1], sys.argv[2], sys.argv[3:]
def last_loss(run):
    lines = open(f"{runs}/{run}/log.jsonl").read().splitlines()[-3:]
    return sum(json.loads(line)["loss"] for line in lines) / len(lines)
losses = {run: last_loss(run) for run in candidates if os.path.isfile(f"{runs}/{run}/log.jsonl")}  # failed runs: none
best = min(losses, key=losses.get)
if os.path.lexists(f"{runs}/{name}"):
    os.remove(f"{runs}/{name}")
os.symlink(best, f"{runs}/{name}")
print("pick", name, "=", best, {run: round(loss, 5) for run, loss in losses.items()})
EOF
}

step_export() {
  local name=$1 runs=() stage
  for stage in ${2//,/ }; do  # a run that failed before its first checkpoint is left out
    if compgen -G "$WORK/runs/$stage/checkpoints/*" > /dev/null; then runs+=("$WORK/runs/$stage");
    else say "export: $stage has no checkpoint, left out"; fi
  done
  rm -rf "${WORK:?}/$name"
  if [ ${#runs[@]} -gt 0 ]; then python3 -m trellis_impl export-folder "${runs[@]}" --out "$WORK/$name";
  else cp -r "$WORK/prev" "$WORK/$name"; fi
  if [ -d "$WORK/prev" ]; then  # stages not trained in this session: the restored folder's files
    python3 - "$WORK/prev" "$WORK/$name" <<'EOF'
import json, shutil, sys
from pathlib import Path
prev, new = Path(sys.argv[1]), Path(sys.argv[2])
old, fresh = json.loads((prev / "pipeline.json").read_text()), json.loads((new / "pipeline.json").read_text())
for path in (prev / "ckpts").iterdir():
    if not (new / "ckpts" / path.name).exists():
        shutil.copy2(path, new / "ckpts" / path.name)
for key, value in old["args"]["models"].items():
    fresh["args"]["models"].setdefault(key, value)
for key, value in old["args"].items():
    fresh["args"].setdefault(key, value)
if not (new / "dinov2").exists() and (prev / "dinov2").exists():
    shutil.copytree(prev / "dinov2", new / "dinov2")
(new / "pipeline.json").write_text(json.dumps(fresh, indent=4))
EOF
  fi
  [ "$name" != vit ] || [ -d "$WORK/vit/dinov2" ]
}

step_features() {
  # into the one merged folder: each shard writes only its assets' feature files (and dataset.json
  # only if an asset fails); one process made about 9 objects/s on the device, bound by its host side
  prepare_in_shards features "$WORK/data" --dinov2 "$WORK/vit/dinov2"
  tail -q -n 1 "$WORK"/features[0-9]*.log
}

step_latents() {
  local kinds=()
  [ -z "${2:-}" ] || kinds=(--latents ${2//,/ })
  python3 -m trellis_impl prepare-data "$WORK/meshes" --out "$WORK/data" "${PREP[@]}" --model "$WORK/$1" \
    "${kinds[@]}" > "$WORK/latents.log" 2>&1
  tail -n 1 "$WORK/latents.log"
}

step_quality() {
  python3 scripts/demo_quality.py --model "$WORK/$1" --out "$OUT/quality" --objects "$2" --views 24 \
    > "$WORK/quality.log" 2>&1 || tail -n 20 "$WORK/quality.log"
  tail -n 8 "$WORK/quality.log"
}

step_pack() {
  rm -rf "$WORK/pack"; mkdir -p "$WORK/pack/demo/logs"
  cp -r "$WORK/$1/." "$WORK/pack/demo/"
  for run in "$WORK"/runs/*/; do
    [ -L "${run%/}" ] && continue  # a pick's link: its run is copied under its own name
    [ -e "$run/log.jsonl" ] && cp "$run/log.jsonl" "$WORK/pack/demo/logs/$(basename "$run").jsonl"
  done
  tar -c -C "$WORK/pack" demo | split -b 15M -d -a 2 - "$OUT/demo.tar.part"
  du -sh "$WORK/pack/demo"; ls -la "$OUT"
}

run_step() {
  local words
  IFS=' ' read -r -a words <<< "$1"
  if [ "${words[0]}" = par ]; then
    local pids=() s p
    for s in "${words[@]:1}"; do run_step "$s" & pids+=($!); done
    for p in "${pids[@]}"; do wait "$p" || say "a parallel step failed (above); the others go on"; done
    return
  fi
  IFS=: read -r -a words <<< "$1"
  say "${words[*]}"
  "step_${words[0]}" "${words[@]:1}"
}

for s in "$@"; do run_step "$s"; done
wait  # a rasteriser build still running (setup) must not be cut: a killed build leaves its lock behind
say done
