"""What every model family shares: the scorer and exporter registry, pipeline preprocessing, export()."""
