"""Run by the tests inside the lerobot 0.3.3 environment: load a v2.1 dataset with that
LeRobot's LeRobotDataset and print what a training script would see, as JSON. Then load it as
OpenPI's data loader does, asking for the `horizon` actions from each frame on (argv[2])."""

import json
import sys

import torch
from lerobot.datasets.lerobot_dataset import LeRobotDataset

ds = LeRobotDataset("local/slarm", root=sys.argv[1])
horizon = int(sys.argv[2])


def chunked(ds) -> dict:
    """What OpenPI's create_torch_dataset gets: per frame, the action chunk and its padding flags."""
    items = [ds[i] for i in range(len(ds))]
    return {"chunks": [it["action"].tolist() for it in items],
            "chunk_pad": [it["action_is_pad"].tolist() for it in items]}


items = [ds[i] for i in range(len(ds))]
cams = ds.meta.camera_keys
state = torch.stack([it["observation.state"] for it in items])
action = torch.stack([it["action"] for it in items])
episode = torch.stack([it["episode_index"] for it in items])
print(json.dumps({
    "version": ds.meta.info["codebase_version"],
    "frames": len(ds),
    "episodes": ds.num_episodes,
    "cameras": cams,
    "image_shapes": {k: list(items[0][k].shape) for k in cams},
    "image_range": [min(float(it[k].min()) for it in items for k in cams),
                    max(float(it[k].max()) for it in items for k in cams)],
    "state": state.tolist(),
    "action": action.tolist(),
    "episode_index": episode.tolist(),
    "tasks": sorted({it["task"] for it in items}),
    "names": ds.meta.features["observation.state"]["names"],
    "stats_keys": sorted(ds.meta.stats),
    **chunked(LeRobotDataset("local/slarm", root=sys.argv[1],
                             delta_timestamps={"action": [t / ds.fps for t in range(horizon)]})),
}))
