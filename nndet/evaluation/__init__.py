"""Detection metrics: AP, FROC, patient-level AP."""
