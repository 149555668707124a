"""A sweep: the grid of runs (method x sparsity x seed) in one folder, resumable, run by a local
pool of processes or as submitit / Slurm jobs.

Layout of a sweep folder ``OUT``::

    OUT/sweep.json                          grid, protocol, environment, every invocation, cells
    OUT/<method>/s<sparsity %>/seed<k>/     one pipeline run folder per cell (e.g. px/s98.20/seed0)
    OUT/dense/seed<k>/                      the dense baseline, once per seed
    OUT/submitit/                           job pickles and logs (``--launcher submitit`` only)

Modules: :mod:`.grid` (the cells and their folders), :mod:`.records` (``sweep.json``: protocol,
environment, reading and writing), :mod:`.cells` (a cell folder's state), :mod:`.session` (one
invocation: what to run, each outcome, the close), :mod:`.worker` (one cell, whichever launcher),
:mod:`.local` (``--jobs``), :mod:`.stack` (``--stack``), :mod:`.slurm` and :mod:`.submit`
(``--launcher submitit``), :mod:`.status` (``--status``). The report reads a sweep only through
:mod:`.grid` and :mod:`.records`.
"""
