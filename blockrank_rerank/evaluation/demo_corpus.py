"""A small corpus written for this project, so the demo runs for anyone who cloned only the repository."""

from __future__ import annotations

DEMO_QUERIES: list[dict] = [
    {
        "query": "how do vaccines train the immune system",
        "relevant": [0, 3],
        "documents": [
            (
                "Vaccines expose the immune system to a harmless piece or weakened form of a pathogen, so that B and T "
                "cells learn to recognise it and respond quickly to a later infection."
            ),
            (
                "The Great Barrier Reef is the largest coral reef system in the world, stretching over 2,300 "
                "kilometres off the coast of Queensland, Australia."
            ),
            (
                "Sourdough bread rises because wild yeast and lactic acid bacteria in the starter ferment the flour, "
                "producing carbon dioxide and a sour taste."
            ),
            (
                "After vaccination, memory cells persist for years; when the real virus appears they multiply and "
                "produce antibodies within days instead of weeks."
            ),
            (
                "Compound interest means that interest is earned on previously earned interest, so savings grow faster "
                "the longer they are left untouched."
            ),
            (
                "Antibiotics kill bacteria or stop them from multiplying, but they have no effect on viruses such as "
                "the common cold."
            ),
            (
                "The Eiffel Tower was completed in 1889 for the World's Fair and was at the time the tallest man-made "
                "structure in the world."
            ),
            "Regular exercise strengthens the heart muscle, lowers resting blood pressure and improves sleep quality.",
        ],
    },
    {
        "query": "why is the sky blue",
        "relevant": [2],
        "documents": [
            "Tomatoes are botanically fruits because they develop from the ovary of a flower and contain seeds.",
            "The stock market is a place where shares of publicly held companies are bought and sold.",
            (
                "Sunlight is scattered by the molecules of the atmosphere; shorter blue wavelengths scatter much more "
                "than red ones (Rayleigh scattering), so the sky looks blue."
            ),
            (
                "Sunsets look red and orange because light travels through more air near the horizon and most of the "
                "blue is scattered away before it reaches us."
            ),
            "Python is a programming language known for readable syntax and a large standard library.",
            "Mount Everest, at 8,849 metres, is the highest mountain above sea level.",
        ],
    },
    {
        "query": "what causes ocean tides",
        "relevant": [1],
        "documents": [
            (
                "Photosynthesis converts light energy into chemical energy stored in glucose, releasing oxygen as a "
                "by-product."
            ),
            (
                "Tides are caused mainly by the Moon's gravity pulling on the oceans, with a smaller contribution from "
                "the Sun; the Earth's rotation moves each place through two bulges a day."
            ),
            "Chess is a two-player strategy game played on a checkered board of 64 squares.",
            (
                "Ocean currents such as the Gulf Stream are driven by wind, the Earth's rotation and differences in "
                "water density."
            ),
            "A haiku is a short Japanese poem of three lines with five, seven and five syllables.",
            "Coffee contains caffeine, a stimulant that blocks adenosine receptors in the brain.",
        ],
    },
]
