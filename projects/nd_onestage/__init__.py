"""nd_onestage: RetinaNet students alone, with ReviewKD and with ReviewKD++ (ReviewKD + ND) over
seeds, on the embedded tree crowns, with ND's mechanism (docs/one_stage.md)."""
