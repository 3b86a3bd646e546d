import numpy as np

from procedge.calibration import CalibrationRecipe, _choose, load_recipe


def test_default_recipe_draws_from_train():
    recipe = load_recipe()
    assert recipe.split == "train" and recipe.size > 0 and recipe.stratified


def test_stratified_choice_is_balanced_seeded_and_unique():
    labels = np.repeat(np.arange(4), [50, 10, 100, 40])
    recipe = CalibrationRecipe(size=40, seed=1)
    chosen = _choose(labels, 40, recipe)
    assert len(set(chosen.tolist())) == 40
    assert np.bincount(labels[chosen]).tolist() == [10, 10, 10, 10]
    assert np.array_equal(chosen, _choose(labels, 40, recipe))
    small_class_exhausted = _choose(labels, 100, recipe)
    assert len(set(small_class_exhausted.tolist())) == 100 and np.bincount(labels[small_class_exhausted])[1] == 10
