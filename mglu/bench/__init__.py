"""The benchmark lab (SPEC §7): ``python -m mglu bench``.

Modules: :mod:`.cases` (shapes, presets, the paper's latencies, bytes/FLOP formulas),
:mod:`.harness` (timing, L2 rotation, measured limits), :mod:`.baselines` (naive MGLU,
SwiGLU, compiled variants, backends bound to inputs), :mod:`.checks` (correct before
timed), :mod:`.sweep` (rows), :mod:`.report` (tables, JSON, plot, progress) and
:mod:`.cli` (``add_arguments``, ``run``).
"""
