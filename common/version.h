/* The version every program of the project reports with --version. */
#pragma once

#define PITR_VERSION "0.1.0"
