"""Tasks (prompt/answer sources, metrics) and the LightningDataModule."""
