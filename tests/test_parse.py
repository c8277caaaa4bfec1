from mivl.edge.parse import parse_boxes, parse_camera_points, parse_objects


def test_grounding_boxes_to_pixels():
    text = "It is <ref>the red car</ref><box>[[100, 200, 500, 800]]</box> and <box>[[0,0,1000,1000],[10, 20, 30, 40]]</box>"
    boxes = parse_boxes(text, image_size=(1600, 900))
    assert [b.label for b in boxes] == ["the red car", None, None]
    assert boxes[0].pixels == (160.0, 180.0, 800.0, 720.0)
    assert boxes[1].pixels == (0.0, 0.0, 1600.0, 900.0)
    assert parse_boxes("no boxes here") == []


def test_drivelm_points_to_camera_pixels():
    # CAM_BACK is row 1, col 1: canvas x 1/3..2/3 (333.3..666.7), y 500..1000
    pts = parse_camera_points("see <c1,CAM_BACK,500.0,750.0> and <c7,CAM_FRONT_LEFT,0,0>")
    assert pts[0].camera == "CAM_BACK" and pts[0].id == 1
    assert abs(pts[0].pixels[0] - 800) < 1e-6 and abs(pts[0].pixels[1] - 450) < 1e-6
    assert pts[1].pixels == (0.0, 0.0)
    assert len(parse_objects("<c2,CAM_FRONT,500,250> <box>[[1,2,3,4]]</box>")) == 2
