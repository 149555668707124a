"""``pxprune report SWEEP_DIR``: mean ± std per method and sparsity from a (partial) sweep.

Reads every finished cell (``summary.json``, ``result.json`` in an older transfer sweep; in a
``sweep --transfer`` folder the accuracy is the pruned backbone's probe or fine-tuned one) under
the sweep folder, lists the cells of the grid in ``sweep.json`` that are not finished (missing,
interrupted or failed), and writes ``report.md`` (best mean per sparsity in bold), the same table as
``report.tex`` (LaTeX, booktabs), ``report.csv``, ``report.png`` (accuracy vs sparsity in the
style of the paper's figure 2: one line per method with a ±1 std band, the dense accuracy as a
dashed horizontal line), ``report_layers.png`` (each layer's density per method, one panel per
sparsity, from the cells' ``layers.csv`` or masks), ``report_curves.png`` (test accuracy and
train loss per epoch, from the cells' ``metrics.jsonl``; left out when no cell trained) and
``report.json``. The std is the sample standard deviation over seeds (n - 1); with a single
seed no std is shown.
"""
