"""Trained runs as self-contained models for other runtimes (SavedModel, TFLite, ONNX).

``export.export_run`` writes them with the preprocessing inside and checks each against
Keras; ``backends`` loads any of them behind one ``predict(pcm_segments)`` call.
"""
