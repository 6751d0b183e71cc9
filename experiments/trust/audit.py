"""Contact sheet + table of the most confident wrong held-out predictions (label audit)."""
import sys, json, csv
import numpy as np
from PIL import Image, ImageDraw
rows = {r["object_id"]: r for r in csv.DictReader(open("../shared/data/egyptian-met/labels.csv"))}
preds = []
for run in sys.argv[2:]:
    preds += json.load(open(f"{run}/eval_test.json"))["predictions"]
top = int(sys.argv[1])
order = sorted(preds, key=lambda p: -p["confidence"])[:top]
wrong = [p for p in order if p["pred"] != p["target"]]
print(f"{len(wrong)} wrong of the {top} most confident of {len(preds)}")
W = Image.new("RGB", (6 * 230, ((len(wrong) + 5) // 6) * 290), "white")
d = ImageDraw.Draw(W)
for i, p in enumerate(wrong):
    oid = p["path"].split("/")[-1].split(".")[0]
    r = rows[oid]
    print(f"{oid} conf {p['confidence']:.3f} label {p['target']} -> pred {p['pred']} | {r['title'][:70]} | {r['medium'][:40]}")
    im = Image.open(p["path"]).convert("RGB").resize((224, 224))
    x, y = (i % 6) * 230, (i // 6) * 290
    W.paste(im, (x, y))
    d.text((x, y + 226), f"{oid} {p['confidence']:.2f}", fill="black")
    d.text((x, y + 240), f"label {p['target']}", fill="red")
    d.text((x, y + 254), f"pred  {p['pred']}", fill="green")
    d.text((x, y + 268), r["title"][:36], fill="black")
W.save("/tmp/audit.png")
