"""The workshop that builds mini-sd: training (`train`), benchmark (`bench`), model card (`card`).

Not part of `course_utils`: learners never import it. Run from the repository root with
`PYTHONPATH=scripts python -m mini_sd.train ...` (= `make train-mini`) or `make bench-mini`.
Imports go one way: bench -> card, train -> card; card imports neither.
"""
