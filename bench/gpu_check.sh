# The GPU checks of a session, run on the device machine from the repository root:
# the throughput benchmarks on cuda and two end-to-end runs. duckdb travels as a wheel in .whl/.
set -x
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 RANKBIAS_OFFLINE=1
TIMEFORMAT="wall %R s"
nvidia-smi --query-gpu=name --format=csv
for c in mlp convnet resnet18; do timeout 100 python3 bench/throughput.py --case $c --device cuda --repeats 3 --steps 200 2>&1 | tail -4; done
time (timeout 120 python3 -m rankbias run examples/resnet18_digits.yaml --results $OUT/r --device cuda --jobs 1 --no-progress train.epochs=5 2>&1 | tail -4)
time (timeout 100 python3 -m rankbias run examples/vit_digits.yaml --results $OUT/v --device cuda --jobs 1 --no-progress train.epochs=5 2>&1 | tail -2)
