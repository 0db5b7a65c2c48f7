"""Metadata and options live in setup.cfg; this file exists for tools that still want it."""

from setuptools import setup

setup()
