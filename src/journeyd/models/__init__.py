"""Real models one command away: the curated catalog (`catalog`) and the local Hugging Face cache (`hub`)."""
