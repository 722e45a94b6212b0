"""Inference on photos and videos: find the faces, frame them as training did, classify them.

Everything here but `backends.TorchClassifier` and `export` runs without torch, so that an exported
ONNX model classifies faces with onnxruntime alone.
"""
