"""Three tiny E2E meaning representations and their references, shared by the tests of pair models."""

MRS = ["name[The Eagle], eatType[pub]", "name[Blue Spice], area[riverside]", "name[The Mill], food[French]"]
REFS = {
    MRS[0]: ["the eagle is a pub", "a pub called the eagle"],
    MRS[1]: ["blue spice is by the river"],
    MRS[2]: ["the mill serves french food", "french food at the mill"],
}
