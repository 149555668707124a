"""Training with masks held fixed: one loop (``loop``) over a run folder per cell (``cell``),
driving the ordinary step (``module_engine``, K=1: ``train.train``) or K stacked cells
(``stacked``); optimiser and schedule (``optim``), recipes, precision, distributed."""
