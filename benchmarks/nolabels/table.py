import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
import math
print("| data (pool / test) | seed | round | labels | estimate | validation estimate (± 2 SE) | true test error | difference |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['data']} ({r['pool']:,} / {r['test']:,}) | {r['seed']} | {r['round']} | {r['n_labels']} | {r['metric']} | "
          f"{r['estimate']:.3f} ± {2 * math.sqrt(r['estimate'] * (1 - r['estimate']) / (r['n_labels'] if r['metric'] == 'cv_error' else 0.2 * r['n_labels'])):.3f} | {r['true_test_error']:.3f} | {r['estimate'] - r['true_test_error']:+.3f} |")
print()
for key in sorted({(r['data'], r['seed']) for r in rows}):
    sel = [r for r in rows if (r['data'], r['seed']) == key]
    d = [r['estimate'] - r['true_test_error'] for r in sel]
    print(f"- {key[0]} seed {key[1]}: seed round `{sel[0]['seed_policy']}` covered {sel[0]['seed_classes']} of 10 classes; "
          f"mean |estimate - true| {sum(abs(x) for x in d)/len(d):.3f}, mean signed {sum(d)/len(d):+.3f}, within 2 SE in {sum(abs(r['estimate'] - r['true_test_error']) <= 2 * math.sqrt(r['estimate'] * (1 - r['estimate']) / r['n_labels']) for r in sel)} of {len(sel)}; loop wall {sel[0]['loop_wall_s']:.0f} s "
          f"({sel[0]['machine']})")
