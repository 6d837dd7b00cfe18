#!/usr/bin/env bash
# The demo model's training on the device (docs/demo_model.md), one step per argument, in order:
#
#   bash scripts/demo_train.sh setup data "train vit_distill 6" "train ss_vae 6" ... pack
#
# Steps (each resumes what is already in $WORK, the device's disk while the machine is held):
#   setup                  install the carried wheels (.whl/) into /tmp/site
#   restore                unpack carried run state (models/demo_state/*.part*) into $WORK/runs
#   data                   procedural meshes (train and held-out seeds) + renders, 4 prepare-data
#                          processes on disjoint meshes, merged into $WORK/data
#   train STAGE MINUTES    configs/training/demo/STAGE.json, frozen paths filled in, for at most MINUTES
#   "par A B ..."          the quoted steps A, B... at the same time (one GPU, small models)
#   export NAME STAGE...   the runs of STAGE... -> model folder $WORK/NAME
#   features | latents     prepare-data's features (distilled ViT) / latents (exported encoders) phases
#   pack                   runs' configs, logs and last weights (no optimizer state) -> $OUT, <= 15 MiB files
set -euo pipefail
export PYTHONUNBUFFERED=1
WORK=${WORK:-/tmp/demo}
OUT=${OUT:-$WORK/out}
COUNT=${COUNT:-1200}
HELD=${HELD:-60}
SHARDS=${SHARDS:-4}
PREP=(--resolution 32 --views 24 --cond-views 8 --render-size 256 --seed 0)
mkdir -p "$WORK/runs" "$WORK/configs" "$OUT"
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
say() { echo "[demo $(date +%H:%M:%S)] $*"; }
# whatever happens (a time-out included), the logs come back: the last line of each progress bar
save_logs() {  # one file: $OUT takes at most 8
  for f in "$WORK"/*.log "$WORK"/runs/*.log; do
    [ -e "$f" ] && { echo "== $f"; tr '\r' '\n' < "$f" | grep -v '^$' | tail -n 40; }
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
  for parts in models/demo_state/*.tar.part00; do
    [ -e "$parts" ] || continue
    cat "${parts%.part00}".part* | tar -x -C "$WORK"
    say "restored $(basename "${parts%.tar.part00}")"
  done
}

step_data() {
  python3 -m trellis_impl procedural-meshes --out "$WORK/meshes" --count "$COUNT" --split train >/dev/null
  python3 -m trellis_impl procedural-meshes --out "$WORK/held" --count "$HELD" --split held_out >/dev/null
  if [ ! -e "$WORK/data/dataset.json" ]; then
    # the shards use the rasteriser's extension built by setup
    for _ in $(seq 120); do grep -q -E "nvdiffrast ready|Traceback" "$WORK/warm.log" 2>/dev/null && break; sleep 1; done
    mapfile -t files < <(ls "$WORK"/meshes/*.glb | sort)
    shards=()
    for k in $(seq 0 $((SHARDS - 1))); do
      part=(); for i in "${!files[@]}"; do (( i % SHARDS == k )) && part+=("${files[$i]}"); done
      # a share of the cores each: 4 processes of 16 threads thrash on 16 cores
      OMP_NUM_THREADS=$(( $(nproc) / SHARDS )) python3 -m trellis_impl prepare-data "${part[@]}" --out "$WORK/part$k" \
        "${PREP[@]}" > "$WORK/part$k.log" 2>&1 &
      shards+=($!)
    done
    OMP_NUM_THREADS=2 python3 -m trellis_impl prepare-data "$WORK/held" --out "$WORK/held_data" "${PREP[@]}" \
      > "$WORK/held.log" 2>&1 &
    shards+=($!)
    for pid in "${shards[@]}"; do wait "$pid"; done
    python3 -c "import sys; from trellis_impl.training.dataset import merge_training_data as m; \
d = m(sys.argv[2:], sys.argv[1]); print(len(d), 'assets,', len(d.manifest['failed']), 'failed')" \
      "$WORK/data" $(for k in $(seq 0 $((SHARDS - 1))); do echo "$WORK/part$k"; done)
  fi
  python3 -m trellis_impl prepare-data "$WORK/held" --out "$WORK/held_data" "${PREP[@]}" >> "$WORK/held.log" 2>&1
  say "data: $(ls "$WORK/data/assets" | wc -l) training assets, $(ls "$WORK/held_data/assets" | wc -l) held out"
}

config() {  # the demo config of stage $1 with the device's frozen paths -> $WORK/configs/$1.json
  python3 - "$1" "$WORK" <<'EOF'
import json, sys
stage, work = sys.argv[1], sys.argv[2]
config = json.load(open(f"configs/training/demo/{stage}.json"))
if "image_encoder" in config.get("frozen", {}):
    config["frozen"]["image_encoder"] = f"{work}/vit/dinov2"
json.dump(config, open(f"{work}/configs/{stage}.json", "w"), indent=2)
EOF
}

step_train() {
  config "$1"
  say "train $1 for at most $2 min"
  python3 -m trellis_impl train "$WORK/configs/$1.json" --data "$WORK/data" --out "$WORK/runs/$1" --minutes "$2" \
    > "$WORK/runs/$1.log" 2>&1 || { tail -30 "$WORK/runs/$1.log"; return 1; }
  tail -2 "$WORK/runs/$1.log"
}

step_export() {
  name=$1; shift
  rm -rf "${WORK:?}/$name"
  python3 -m trellis_impl export-folder $(for s in "$@"; do echo "$WORK/runs/$s"; done) --out "$WORK/$name"
}

step_features() {
  python3 -m trellis_impl prepare-data "$WORK/meshes" --out "$WORK/data" "${PREP[@]}" --dinov2 "$WORK/vit/dinov2" 2>&1 | tail -2
  python3 -m trellis_impl prepare-data "$WORK/held" --out "$WORK/held_data" "${PREP[@]}" --dinov2 "$WORK/vit/dinov2" 2>&1 | tail -2
}

step_latents() {
  python3 -m trellis_impl prepare-data "$WORK/meshes" --out "$WORK/data" "${PREP[@]}" --model "$WORK/encoders" 2>&1 | tail -2
}

step_pack() {
  mkdir -p "$WORK/pack"
  for run in "$WORK"/runs/*/; do
    stage=$(basename "$run")
    last=$(ls -d "$run"checkpoints/step_* 2>/dev/null | sort | tail -1) || true
    [ -n "$last" ] || continue
    tar -c -C "$WORK" "runs/$stage/config.json" "runs/$stage/stage.json" "runs/$stage/log.jsonl" \
      "runs/$stage/checkpoints/$(basename "$last")/models.safetensors" \
      "runs/$stage/checkpoints/$(basename "$last")/ema.safetensors" > "$WORK/pack/$stage.tar"
  done
  for f in "$WORK"/pack/*.tar; do split -b 15M -d -a 2 "$f" "$OUT/$(basename "$f").part"; rm "$f"; done
  ls -la "$OUT"
}

run_step() {
  read -r -a words <<< "$1"
  case "${words[0]}" in
    par) local pids=(); for s in "${words[@]:1}"; do run_step "${s//+/ }" & pids+=($!); done
         for p in "${pids[@]}"; do wait "$p"; done ;;
    *) say "${words[*]}"; "step_${words[0]}" "${words[@]:1}" ;;
  esac
}

for s in "$@"; do run_step "$s"; done
say done
