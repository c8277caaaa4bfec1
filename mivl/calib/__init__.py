"""Calibration and training images: readers for image folders and JSONL records, and a built-in
generator of synthetic six-camera driving scenes with known contents."""
