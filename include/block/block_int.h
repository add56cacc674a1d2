/*
 * The inside of the block layer, for block/ and its drivers: the driver
 * interface (block_int-driver.h), the graph's nodes, edges and changes
 * (block_int-graph.h) and the I/O API (block_int-io.h).
 */
#ifndef BLOCK_BLOCK_INT_H
#define BLOCK_BLOCK_INT_H

#include "block/block_int-driver.h"
#include "block/block_int-graph.h"
#include "block/block_int-io.h"

#endif /* BLOCK_BLOCK_INT_H */
