"""cnn-bench: what VGG and ResNet cost in PyTorch versus TensorFlow, per depth and batch size."""
