# The GPU checks of a session, run on the device machine from the repository root (about 5 min):
# the engine's CUDA-graph step checked against the eager one and timed (bench/gpu_graph.py), the
# throughput benchmarks on cuda, one end-to-end run. duckdb travels as a wheel in .whl/.
set -x
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 RANKBIAS_OFFLINE=1
TIMEFORMAT="wall %R s"
nvidia-smi --query-gpu=name --format=csv
timeout 150 python3 bench/gpu_graph.py 2>&1 | tail -12
T="timeout 70 python3 bench/throughput.py --device cuda --steps 100"
$T --case mlp --repeats 3 2>&1 | tail -3
$T --case mlp --repeats 2 --graph off 2>&1 | tail -3
$T --case mlp --repeats 2 --update fused 2>&1 | tail -3
$T --case mlp --repeats 3 --runs 1 2>&1 | tail -3
$T --case convnet --repeats 2 2>&1 | tail -3
$T --case resnet18 --repeats 2 2>&1 | tail -3
time (timeout 60 python3 -m rankbias run examples/resnet18_digits.yaml --results $OUT/r --device cuda --jobs 1 --no-progress train.epochs=5 2>&1 | tail -3)
