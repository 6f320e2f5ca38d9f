#!/usr/bin/env bash
# The device check (`make gpu-check`): on one CUDA GPU, within 8 minutes, writes its JSON under $OUT (default
# outputs/gpu_check):
#   1. memory rows at Llama-3.2-1B shapes, batch 8 x 512: ID-SPAM m=N/2 (bf16, nf4, nf4 + checkpointing,
#      nf4 + cache) against PEFT prompt tuning and PEFT LoRA/QLoRA, bf16 and nf4          -> memory_1b.json
#   2. memory rows at Llama-3.1-8B shapes in nf4: ID-SPAM m=16 + checkpointing against PEFT QLoRA and PEFT
#      prompt tuning on the same 4-bit backbone (each row builds, saves and reloads 8B random weights)
#                                                                                          -> memory_8b.json
#   3. the step benchmark (every method against PEFT, cache rows included) on llama_small, bf16  -> step.json
#   4. one short real training run on the packaged MiniLM on the GPU, cache_lower on        -> run/results.json
# Each part has its own time limit, so a slow part cannot take the others down; the summary says which ran.
# The exit code is 0 when every part did, else 1 (2: no CUDA device).
# The environment can shrink it to a rehearsal on any machine (tests/test_gpu_check.py runs it on the CPU with tiny
# models): DEVICE (cuda), MODEL_1B, MODEL_8B, STEP_MODEL, BATCH (8), LENGTH (512), TRAINER (gpu), RUN_SAMPLES (256)
# and LIMIT_SCALE (1, multiplies every time limit).
set -u
OUT=${OUT:-outputs/gpu_check}
PY=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
MODEL_1B=${MODEL_1B:-llama_3_2_1b}
MODEL_8B=${MODEL_8B:-llama_3_1_8b}
STEP_MODEL=${STEP_MODEL:-llama_small}
BATCH=${BATCH:-8}
LENGTH=${LENGTH:-512}
TRAINER=${TRAINER:-gpu}
RUN_SAMPLES=${RUN_SAMPLES:-256}
LIMIT_SCALE=${LIMIT_SCALE:-1}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
failed=0
status() { echo "{\"part\": \"$1\", \"rc\": $2, \"seconds\": $3}" >> "$OUT/summary.jsonl"; }
limit() { echo $(($1 * LIMIT_SCALE)); }
part() {  # part NAME LIMIT_S COMMAND...
  local name=$1 seconds; seconds=$(limit "$2"); shift 2
  local start=$SECONDS rc
  timeout "$seconds" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  [ "$rc" -eq 0 ] || failed=1
  status "$name" "$rc" $((SECONDS - start))
}
: > "$OUT/summary.jsonl"
if [[ $DEVICE == cuda* ]]; then
  $PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))" \
    > "$OUT/device.txt" || { echo "no CUDA device: the check needs one" >&2; exit 2; }
else
  echo "$DEVICE (a rehearsal: DEVICE=$DEVICE)" > "$OUT/device.txt"
fi
common=(--device "$DEVICE" --batch "$BATCH" --length "$LENGTH")
part memory_1b 150 $PY -m idspam.tools.bench --memory-rows --model "$MODEL_1B" "${common[@]}" \
  --steps 3 --row-timeout "$(limit 60)" --out "$OUT/memory_1b.json" \
  --rows "idspam m=mid bf16,idspam m=mid nf4,idspam m=mid nf4 ckpt,idspam m=mid nf4 cache,peft prompt_tuning bf16,peft lora bf16,peft prompt_tuning nf4,peft lora nf4"
part memory_8b 200 $PY -m idspam.tools.bench --memory-rows --model "$MODEL_8B" "${common[@]}" \
  --steps 3 --row-timeout "$(limit 95)" --out "$OUT/memory_8b.json" \
  --rows "idspam m=mid nf4 ckpt,peft lora nf4"
part step 60 $PY -m idspam.tools.bench --model "$STEP_MODEL" "${common[@]}" --precision bf16 \
  --steps 2 --repeats 3 --warmup 1 --memory off --out "$OUT/step.json"
part run 60 $PY -m idspam.run "trainer=$TRAINER" logger=none trainer.max_epochs=2 "task.max_train_samples=$RUN_SAMPLES" \
  cache_lower=true "paths.output_dir=$OUT/run"
cat "$OUT/summary.jsonl"
exit "$failed"
