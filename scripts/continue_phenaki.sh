#!/bin/bash
# Continue the shipped Phenaki MaskGIT on a GPU node for a fixed wall-clock budget, with a
# cosine schedule that ends when the budget does.
#
# A lease gives minutes, not steps, and how many steps a node makes depends on its GPU and
# on how many cores render the Shapes world. So a short probe run measures steps/s first, and
# the real run's --max-steps is sized from it (--max-minutes stays as the backstop); the
# learning rate then decays fully instead of being cut mid-schedule.
#
#   # here: carry the wheels and the text encoder (scripts/offline_node.py), then on the node:
#   bash scripts/continue_phenaki.sh            # writes $OUT/phenaki-transformer.tar and logs
#
# Settings (environment): END (seconds from the start that the whole script may take: 560),
# BATCH (64), WORKERS (data workers: 13 of 16 cores), LR (3e-4), SEED (27), FROM (the model
# folder to continue: kinema/pretrained/phenaki-shapes), OUT (where results go: ./out).
# Works on a CPU too (slowly): the same commands, no GPU needed.
set -x
export PYTHONUNBUFFERED=1
T0=$(date +%s)
OUT=${OUT:-out}; mkdir -p "$OUT"
FROM=${FROM:-kinema/pretrained/phenaki-shapes}
if [ -d .node ] && [ ! -d /tmp/site ]; then  # an offline node: install what .node carries
  python3 scripts/offline_node.py unpack .node --site /tmp/site --model /tmp/minilm || exit 1
fi
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site:$PWD KINEMA_MINILM=/tmp/minilm
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null; nproc
COMMON="--tokenizer $FROM --init-from $FROM --batch-size ${BATCH:-64} --lr ${LR:-3e-4} --warmup-steps 100 --foreground-weight 8 --data-workers ${WORKERS:-13} --threads 2 --no-progress"

# the probe: up to 500 steps in a minute; its rate is the median over the later half of its
# logged steps, once the data workers have filled up
rm -rf /tmp/probe
python3 -m kinema.train phenaki $COMMON --output /tmp/probe --max-steps 500 --max-minutes 1 \
  --save-every 0 --save-every-minutes 0 --seed 99 > "$OUT/probe.log" 2>&1
RATE=$(python3 -c "
import json, statistics
rates = [r['steps_per_s'] for r in map(json.loads, open('/tmp/probe/metrics.jsonl')) if 'steps_per_s' in r]
print(statistics.median(rates[len(rates) // 2:]))") || { echo "the probe run failed:"; tail -n 20 "$OUT/probe.log"; exit 1; }
LEFT=$(( ${END:-560} - ( $(date +%s) - T0 ) - 40 ))  # seconds left to train (start-up and export take ~40)
STEPS=$(python3 -c "print(int($RATE * $LEFT * 0.93))")
MINUTES=$(python3 -c "print(round(($LEFT + 10) / 60, 2))")
echo "probe: $RATE steps/s; training $STEPS steps in at most $MINUTES minutes"

rm -rf /tmp/mg
python3 -m kinema.train phenaki $COMMON --output /tmp/mg --max-steps "$STEPS" --max-minutes "$MINUTES" \
  --save-every 100000 --save-every-minutes 3 --seed ${SEED:-27} > "$OUT/phenaki.log" 2>&1 &
P=$!
set +x
while kill -0 $P 2>/dev/null; do
  sleep 30; echo "t=$(( $(date +%s) - T0 ))s $(tail -n1 "$OUT/phenaki.log")"
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null; uptime
done
set -x
wait $P || exit 1
cp /tmp/mg/metrics.jsonl "$OUT/phenaki-metrics.jsonl"
tar -C /tmp/mg -cf "$OUT/phenaki-transformer.tar" pipeline/transformer pipeline/model_index.json
echo "total $(( $(date +%s) - T0 ))s"
