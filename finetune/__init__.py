"""Training for speech emotion recognition: corpora in, versioned checkpoint directories out."""
