"""Teacher and student models: creation, checkpoints, feature taps, cost-based sizing."""
