"""Jet data: Pythia 8 generation, the HDF5 schema, preprocessing, images, observables, loaders.

Modules: ``generate``, ``io``, ``preprocess``, ``images``, ``observables``, ``loader``.
"""
