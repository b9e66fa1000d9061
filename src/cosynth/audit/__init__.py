"""Bias audit (before training) and mitigation: is the data separable by what should not matter?"""
