"""Raw ticks with gaps onto LeRobot's frame grid, and the action definitions."""

import numpy as np

from slarm.convert.frames import fit
from slarm.convert.timeline import actions, grid_rows


def test_missed_ticks_repeat_the_nearest_frame_and_are_counted():
    rows, repeated = grid_rows(np.array([0, 1, 2, 5, 6, 9]))
    # slots 3 and 4 were missed: 3 is nearer tick 2, 4 is nearer tick 5; 7 -> 6, 8 -> 9
    assert rows.tolist() == [0, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert repeated == 4


def test_no_missed_ticks_is_the_identity():
    rows, repeated = grid_rows(np.arange(7) + 100)
    assert rows.tolist() == list(range(7)) and repeated == 0


def test_action_definitions():
    s = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_array_equal(actions(s, "state"), s)
    nxt = actions(s, "next-state")
    np.testing.assert_array_equal(nxt[:3], s[1:])
    np.testing.assert_array_equal(nxt[3], s[3])


def test_pad_letterboxes_and_crop_keeps_the_centre():
    img = np.full((100, 200, 3), 200, np.uint8)
    img[:, :50] = 0  # a dark left quarter
    padded = fit(img, 64, 64, "pad")
    assert padded.shape == (64, 64, 3)
    assert padded[0].max() == 0 and padded[-1].max() == 0, "black bars above and below"
    assert (padded[32, 40] == 200).all()
    cropped = fit(img, 64, 64, "crop")
    assert cropped.min() == 200, "the dark left quarter lies outside the centre square"
