"""The generation study: quality per CPU second of a trained jet EBM's samplers and settings.

Its command line is ``experiments/ebm_generation_study.py``; the modules, in the order they build on
each other:

  settings   the grid (`Family`, `study_grid`) and shared constants
  loading    a finished seed run (`load_run`) and the chain starts
  chains     compiled chains in segments, continued later (`ChainPrograms`, `run_family`)
  metrics    scores of a sample against the test QCD jets (`score`, `real_reference`)
  runner     the grid in the order of `work_plan` under a time budget (`run_study`)
  selection  best setting per CPU-time budget and the recommended default
  tails, findings, report, figures   the report's numbers, sentences, markdown and plots
  outputs    the files (`finish`)
  study      the whole study (`run_generation_study`) and `rewrite_report`
"""
