"""Object detection pieces shared by the detection task, its data sources and the SSD model:
boxes.py (default boxes, matching, loss, decoding + NMS) and coco.py (pycocotools mAP)."""
