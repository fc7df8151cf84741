"""The peer for bench/squad.py's serving comparison: transformers' own `pipeline("question-answering")`.

transformers 5 removed that pipeline, so this program runs in a separate environment with transformers 4.x
(`make setup-hf4` makes `.venv-hf4`: torch 2.13.0 CPU + transformers<5). It imports nothing from this project.

Reads a JSON list of {"question", "context"}, answers every question with the pipeline on the model directory
(a fine-tuned `BertForQuestionAnswering` saved with `save_pretrained`, tokenizer files beside it), in calls of
`--batch` questions with the pipeline's `batch_size` windows per forward pass, after one warm-up call, and writes
{"answers": [...], "starts": [...], "ends": [...], "wall_s", "cpu_s", "transformers"} to `--out`.

    .venv-hf4/bin/python bench/hf_qa_pipeline.py --model DIR --questions q.json --out answers.json \
        --max_seq_len 256 --doc_stride 109 --max_answer_len 30 --batch 16 --threads 2 [--dtype bfloat16]
"""

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="save_pretrained directory (model + tokenizer).")
    parser.add_argument("--questions", required=True, help='JSON list of {"question", "context"}.')
    parser.add_argument("--out", required=True, help="Where to write the answers and timings (JSON).")
    parser.add_argument("--max_seq_len", type=int, default=384)
    parser.add_argument("--doc_stride", type=int, default=128, help="The pipeline's doc_stride: window overlap.")
    parser.add_argument("--max_answer_len", type=int, default=15)
    parser.add_argument("--batch", type=int, default=16, help="Questions per pipeline call and windows per forward.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="The model's torch dtype (the pipeline's `torch_dtype`).")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    with open(args.questions, encoding="utf-8") as f:
        items = json.load(f)
    qa = transformers.pipeline("question-answering", model=args.model, tokenizer=args.model, device=-1,
                               torch_dtype=getattr(torch, args.dtype))
    settings = dict(max_seq_len=args.max_seq_len, doc_stride=args.doc_stride, max_answer_len=args.max_answer_len,
                    batch_size=args.batch)

    def answer(chunk):
        out = qa(question=[x["question"] for x in chunk], context=[x["context"] for x in chunk], **settings)
        return out if isinstance(out, list) else [out]

    answer(items[:2])  # warm-up
    results = []
    t = os.times()
    cpu0, wall0 = t.user + t.system, time.perf_counter()
    for i in range(0, len(items), args.batch):
        results += answer(items[i:i + args.batch])
    wall = time.perf_counter() - wall0
    t = os.times()
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"answers": [r["answer"] for r in results], "starts": [int(r["start"]) for r in results],
                   "ends": [int(r["end"]) for r in results], "wall_s": wall, "cpu_s": t.user + t.system - cpu0,
                   "transformers": transformers.__version__}, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
