//! The madsim simulation of one seed (filled in below).
