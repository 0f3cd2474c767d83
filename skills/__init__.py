"""Skills: name the skills a query needs.

An annotator LLM proposes keywords (sampled several times, kept by vote); sentence-transformers
maps each keyword onto one canonical skill vocabulary by nearest neighbour.
"""
