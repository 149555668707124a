"""Forward interception: the copies of a network that path-based scores (PX, SynFlow) run."""
