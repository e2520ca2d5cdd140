"""Pictures of trained models: the run report, the paper's analyses, per-file plots.

``report.make_report(run_dir)`` draws every registered report section that applies to a
run (``sections.register_section``); ``network`` holds the SampleCNN paper's analyses
(squeeze-excitation statistics per class, learned filters); ``plots`` draws one tagged
file. Everything renders with matplotlib's Agg backend, so no display is needed.
"""
import matplotlib

matplotlib.use("Agg")
