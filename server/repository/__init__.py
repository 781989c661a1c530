"""The model repository on disk: its layout, the model file format, per-model config, loading and polling."""
