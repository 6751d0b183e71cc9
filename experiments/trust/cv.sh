#!/bin/bash
# usage: experiments/trust/cv.sh NAME ARCH SIZE "RECIPE FLAGS" FOLD...   (train + evaluate each fold, skip finished ones,
#        resume interrupted ones from their checkpoint)
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD
PY=${PYTHON:-.venv/bin/python}
name=$1 arch=$2 size=$3 flags=$4; shift 4
for k in "$@"; do
  out=runs/cv$k-$name
  if [ -f $out/eval_test.json ]; then continue; fi
  if [ -f $out/checkpoint.pt ] && ! grep -qs '"finished": "' $out/run.json; then  # interrupted: continue it
    /usr/bin/time -f "train (resumed) $out %e s wall %U s user" nice -n 19 $PY -m trainer train --resume --out $out \
      2>&1 | grep --line-buffered -v "^\[train\] epoch"
  elif [ ! -f $out/run.json ] || ! grep -q '"finished": "' $out/run.json; then
    rm -rf $out
    /usr/bin/time -f "train $out %e s wall %U s user" nice -n 19 $PY -m trainer train --corpus corpora/egyptian-cv$k \
      --taxonomy corpus --arch $arch --image-size $size --batch-size 32 --workers 1 --warmup-epochs 0.5 $flags \
      --out $out 2>&1 | grep --line-buffered -v "^\[train\] epoch" 
  fi
  /usr/bin/time -f "evaluate $out %e s wall %U s user" nice -n 19 $PY -m trainer evaluate --run $out --split test --workers 1 \
    | grep --line-buffered -v "^  [A-Z]" 
done
