"""The LightningModule, schedules and optimiser construction."""
