"""The demo models' generators, loaded the way the platform loads them: by path, from their model folder."""

from pathlib import Path

from loopline.ops.demo_data import load_generator

MODELS = Path(__file__).resolve().parents[1] / "models"
credit_risk = load_generator(MODELS / "credit_risk")
card_fraud = load_generator(MODELS / "card_fraud")
